{
  description = "Self-hosted voice assistant: the agent's OCI image (dockerTools) and a development shell";

  # nixpkgs is pinned to one commit of the nixos-25.11 release branch. Source:
  # the flake.lock of the public repository sglre6355/nixos-config (commit
  # 6718494aea2d246e642e98a675b0543a73c6d6a7), where `ref = nixos-25.11` was
  # locked to this rev (lastModified 1768940263 = 2026-01-20, narHash
  # sha256-sJERJIYTKPFXkoz/gBaBtRKke82h4DkX3BBSsKbfbvI=); another public repo
  # fetches files of NixOS/nixpkgs at the same rev. It could not be fetched from
  # the machine this was written on: the first `nix flake lock` checks it, and
  # the narHash above lets you compare.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/3ceaaa8bc963ced4d830e06ea2d0863b6490ff03";

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
      # file against the lock). A fixed-output derivation must know the hash of
      # its whole output in advance, and that cannot be computed without network
      # access: after creating or changing the lock, run `make image` once; it
      # stops with "hash mismatch ... got: sha256-..."; put that value here for
      # your system. Until then these are lib.fakeHash placeholders, so a build
      # fails loudly instead of using unchecked files.
      wheelsHash = {
        x86_64-linux = nixpkgs.lib.fakeHash;
        aarch64-linux = nixpkgs.lib.fakeHash;
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
          sitePackages = python.sitePackages;

          # pip and setuptools run the install at build time, through
          # PYTHONPATH, so neither ends up in the image.
          buildTools = lib.concatMapStringsSep ":" (p: "${p}/${sitePackages}") [
            python.pkgs.pip
            python.pkgs.setuptools
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
