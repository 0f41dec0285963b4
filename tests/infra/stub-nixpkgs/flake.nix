# A stand-in for nixpkgs, for evaluating ../../../flake.nix without a network:
# every package is a derivation that is never built, and the builder functions
# keep the arguments they were called with in `stubArgs` so tests can inspect
# exactly what the flake asks dockerTools and stdenv to build.
{
  outputs =
    { self }:
    let
      lib = {
        genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
        fakeHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
        removePrefix =
          p: s:
          if lib.hasPrefix p s then
            builtins.substring (builtins.stringLength p) (builtins.stringLength s) s
          else
            s;
        hasInfix = i: s: builtins.match ".*${i}.*" s != null;
        concatMapStringsSep = sep: f: l: builtins.concatStringsSep sep (map f l);
      };

      mkPkgs =
        system:
        let
          stub =
            name: extra:
            (derivation {
              inherit name system;
              builder = "/bin/sh";
              args = [
                "-c"
                "echo this is a stub and cannot be built; exit 1"
              ];
            })
            // extra;
          mkDerivation =
            args: stub (args.name or "${args.pname}-${args.version}") { stubArgs = args; };
          # An interpreter with its package set; python3 stands for the channel's
          # default Python, whose packages Hydra builds.
          mkPython =
            version:
            let
              py = stub "python3-${version}-stub" { };
            in
            py
            // {
              sitePackages = "lib/python${version}/site-packages";
              interpreter = "${py}/bin/python${version}";
              pkgs = {
                pip = stub "python${version}-pip-stub" { };
                setuptools = stub "python${version}-setuptools-stub" { };
              };
            };
          python311 = mkPython "3.11";
          python3 = mkPython "3.13";
        in
        {
          inherit lib python311 python3 system;
          python3Packages = python3.pkgs;
          stdenv = {
            inherit mkDerivation;
            hostPlatform = { inherit system; };
            cc.cc.lib = stub "gcc-lib-stub" { };
          };
          stdenvNoCC = { inherit mkDerivation; };
          dockerTools.buildLayeredImage =
            args:
            stub "${args.name}.tar.gz" {
              stubArgs = args;
              imageName = args.name;
              imageTag = args.tag;
            };
          mkShell = args: stub "nix-shell" { stubArgs = args; };
          cacert = stub "cacert-stub" { };
          zlib = stub "zlib-stub" { };
          autoPatchelfHook = stub "auto-patchelf-hook-stub" { };
          uv = stub "uv-stub" { };
          gnumake = stub "gnumake-stub" { };
          shellcheck = stub "shellcheck-stub" { };
          hadolint = stub "hadolint-stub" { };
          docker-compose = stub "docker-compose-stub" { };
          jq = stub "jq-stub" { };
        };
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] mkPkgs;
    };
}
