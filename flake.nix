{
  description = "Self-hosted voice assistant: the agent's OCI image (dockerTools) and a development shell";

  # nixpkgs is pinned to one commit of the nixos-26.05 release branch (supported until
  # 2026-12-31; nixos-25.11 went out of support on 2026-06-30). Source: the flake.lock of
  # the public repository kclejeune/system (commit d82cc0d), where its `stable` input,
  # `ref = nixos-26.05`, is locked to this rev (lastModified 1787042014 = 2026-08-18,
  # narHash sha256-lgnV/xeEatfEnPZG0RrXS0fhcr63p3tsVvL1GdaVkJQ=); two other public
  # repositories pin or link NixOS/nixpkgs at the same rev, one calling it "a
  # nixpkgs-26.05 rev". A channel commit means Hydra built the release jobset, so what
  # it builds is on cache.nixos.org. It could not be fetched from the machine this was
  # written on: the first `nix flake lock` checks it, and the narHash above lets you
  # compare. scripts/wheels-hash.sh names this channel's glibc (2.42).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/c69ae8fb8faeb3472fd11234ba55a70ac3601f9b";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      pyproject = builtins.fromTOML (builtins.readFile ./pyproject.toml);
      version = pyproject.project.version;

      # The agent's Python dependencies come only from requirements.lock, a
      # `uv pip compile --generate-hashes` lock: exact versions and sha256 of
      # every allowed file, but no URLs. Nix fetches them in one fixed-output
      # derivation that runs `pip download --require-hashes` (pip checks each
      # file against the lock). Its output hash, per system, is the NAR hash of
      # what that download brings: `make lock` recomputes both with
      # scripts/wheels-hash.sh, which runs the same download outside Nix for each
      # target (pip told the interpreter, ABIs and platform tags of nixpkgs'
      # CPython 3.11 on that system) and hashes the result with `nix hash path`.
      wheelsHash = {
        x86_64-linux = "sha256-BVP3w2lfq4Q1EJHqsrAS1mVlaXoXG7toB672Fc/imxY=";
        aarch64-linux = "sha256-gI26tpsyjr6RyQbrviLRzWWRFig34580eDffmcieiLE=";
      };

      uid = "10001";

      # A default from .env.example (generated from agent/config.py), so the image
      # does not restate it.
      envExampleLines = builtins.filter builtins.isString (
        builtins.split "\n" (builtins.readFile ./.env.example)
      );
      envDefault =
        name:
        builtins.head (
          builtins.concatMap (
            line:
            let
              found = builtins.match "${name}=(.*)" line;
            in
            if found == null then [ ] else found
          ) envExampleLines
        );
      agentPort = envDefault "AGENT_PORT";

      build =
        pkgs:
        let
          inherit (pkgs) lib;
          system = pkgs.stdenv.hostPlatform.system;

          # The interpreter requirements.lock is compiled for (Python 3.11).
          python = pkgs.python311;

          # pip and setuptools run the download and the install at build time,
          # through PYTHONPATH, so neither ends up in the image. They come from the
          # channel's default package set, which Hydra builds (cache.nixos.org has
          # it); python311Packages is not a Hydra job, so its pip would be built
          # here, Sphinx and test suites included. Both are pure Python and run on
          # 3.11.
          buildTools = lib.concatMapStringsSep ":" (p: "${p}/${pkgs.python3.sitePackages}") [
            pkgs.python3Packages.pip
            pkgs.python3Packages.setuptools
          ];

          root = toString ./.;
          # Only what the agent needs: a new test or doc does not rebuild the image.
          src = builtins.path {
            name = "voice-agent-src";
            path = ./.;
            filter =
              path: type:
              let
                rel = lib.removePrefix (root + "/") (toString path);
              in
              !(lib.hasInfix "__pycache__" rel)
              && (
                builtins.elem rel [
                  "pyproject.toml"
                  "requirements.lock"
                  "README.md"
                  "LICENSE"
                  "agent"
                ]
                || lib.hasPrefix "agent/" rel
              );
          };

          wheels = pkgs.stdenvNoCC.mkDerivation {
            name = "voice-agent-wheels-${version}";
            nativeBuildInputs = [
              python
              pkgs.cacert
            ];
            buildCommand = ''
              export HOME="$TMPDIR" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
              export SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt
              PYTHONPATH=${buildTools} ${python.interpreter} -m pip download \
                --no-deps --require-hashes --no-build-isolation \
                --dest "$out" --requirement ${./requirements.lock}
            '';
            outputHashMode = "recursive";
            outputHashAlgo = "sha256";
            outputHash = wheelsHash.${system};
          };

          # A virtual environment in the store: the wheels above, installed
          # offline and checked against the lock again, plus the agent itself.
          agent = pkgs.stdenv.mkDerivation {
            pname = "voice-agent-env";
            inherit version src;
            nativeBuildInputs = [
              python
              pkgs.autoPatchelfHook
            ];
            # Libraries that manylinux wheels expect the system to provide;
            # autoPatchelfHook fails the build if any other one is missing.
            buildInputs = [
              pkgs.stdenv.cc.cc.lib
              pkgs.zlib
            ];
            dontConfigure = true;
            dontBuild = true;
            # Stripping prebuilt wheel libraries can break them.
            dontStrip = true;
            installPhase = ''
              runHook preInstall
              export HOME="$TMPDIR" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
              ${python.interpreter} -m venv --without-pip "$out"
              PYTHONPATH=${buildTools} "$out/bin/python" -m pip install \
                --no-index --find-links ${wheels} --require-hashes --no-deps \
                --no-build-isolation --no-compile --requirement requirements.lock
              PYTHONPATH=${buildTools} "$out/bin/python" -m pip install \
                --no-index --no-deps --no-build-isolation --no-compile .
              # What the agent never loads, as in the Dockerfile's image.
              bash ${./scripts/prune-venv.sh} "$out"
              # Hash-checked bytecode stays valid with the store's fixed mtimes.
              "$out/bin/python" -m compileall -q --invalidation-mode unchecked-hash "$out/lib"
              runHook postInstall
            '';
          };

          image = pkgs.dockerTools.buildLayeredImage {
            name = "voice-agent";
            tag = version;
            # CA certificates only; the agent's closure comes with the entrypoint.
            # No shell, no coreutils: nothing in the image runs through /bin/sh.
            contents = [ pkgs.cacert ];
            fakeRootCommands = ''
              mkdir -p etc data tmp
              printf 'root:x:0:0:root:/var/empty:/var/empty\nagent:x:${uid}:${uid}:voice agent:/data:/var/empty\n' > etc/passwd
              printf 'root:x:0:\nagent:x:${uid}:\n' > etc/group
              chown ${uid}:${uid} data
              chmod 1777 tmp
            '';
            config = {
              User = "${uid}:${uid}";
              Entrypoint = [ "${agent}/bin/voice-agent" ];
              Cmd = [ "serve" ];
              WorkingDir = "/data";
              Env = [
                "PATH=${agent}/bin"
                "HOME=/data"
                # The agent's defaults apply otherwise; the certificate lives in /data.
                "TLS_DIR=/data/tls"
                "PYTHONUNBUFFERED=1"
                "PYTHONDONTWRITEBYTECODE=1"
                "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
              ];
              ExposedPorts = {
                "${agentPort}/tcp" = { };
              };
              Volumes = {
                "/data" = { };
              };
              Labels = {
                "org.opencontainers.image.title" = "voice-agent";
                "org.opencontainers.image.description" = pyproject.project.description;
                "org.opencontainers.image.version" = version;
                "org.opencontainers.image.licenses" = "MIT";
                "org.opencontainers.image.revision" = self.rev or "dirty";
              };
            };
          };
        in
        {
          inherit wheels agent image;
          default = image;
        };
    in
    {
      packages = forAllSystems build;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.python311
            pkgs.uv
            pkgs.gnumake
            pkgs.shellcheck
            pkgs.hadolint
            pkgs.docker-compose
            pkgs.jq
          ];
        };
      });
    };
}
