"""What is inside each image, and whether any of it has a known vulnerability; both read from the locks.

    python requirements/bom.py sbom [OUT_DIR]   # `make sbom`: CycloneDX JSON per image (build/sbom/*.cdx.json)
    python requirements/bom.py audit            # `make audit`: pip-audit over every lock

The SBOM of an image is its lock (cyclonedx-py, the CycloneDX project's own tool) with the project as the
root component, its version, and the root's direct dependencies filled in (a requirements file carries no
dependency graph, so the rest of the graph stays flat). The audit asks a vulnerability service about every
pinned version (``AUDIT_SERVICE``: ``pypi``, PyPI's JSON API, the default; or ``osv``, osv.dev). A service
that cannot answer for a package is not "no vulnerabilities": the audit then says which packages it could not
check and exits 2, so a closed network never passes for a clean audit; a known vulnerability exits 1.
``AUDIT_OSV_URL`` points the osv service at a mirror of osv.dev's query API.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import lock

IMAGES = {"daemon": lock.LOCKS[1], "trainer": lock.LOCKS[2]}
EXIT_VULNERABLE = 1
EXIT_INCOMPLETE = 2


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _direct(extras: tuple[str, ...]) -> set[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = lock.tomllib.loads(lock.PYPROJECT.read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(text).name) for text in texts}


def sbom(out_dir: Path) -> int:
    from packaging.utils import canonicalize_name

    out_dir.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version(lock.PROJECT)
    # cyclonedx-py warns that the root has no dependencies: they are filled in below.
    env = {**os.environ, "PYTHONWARNINGS": "ignore:The Component this BOM is describing"}
    for image, target in IMAGES.items():
        out = out_dir / f"{image}.cdx.json"
        command = [
            _tool("cyclonedx-py"),
            "requirements",
            "--pyproject",
            str(lock.PYPROJECT),
            "--mc-type",
            "application",
            "--output-reproducible",
            "--of",
            "JSON",
            "-o",
            str(out),
            str(target.path),
        ]
        subprocess.run(command, check=True, env=env)
        document = json.loads(out.read_text())
        root = document["metadata"]["component"]
        root["version"] = version
        root.setdefault("properties", []).append({"name": "retrain:image-target", "value": image})
        direct = _direct(target.extras)
        refs = [c["bom-ref"] for c in document["components"] if canonicalize_name(c["name"]) in direct]
        document["dependencies"] = [d for d in document.get("dependencies", []) if d["ref"] != root["bom-ref"]]
        document["dependencies"].append({"ref": root["bom-ref"], "dependsOn": sorted(refs)})
        out.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        print(f"{out}: {image} image, {len(document['components'])} components, {len(refs)} direct")
    return 0


def audit(service: str, osv_url: str | None) -> int:
    vulnerable = incomplete = False
    for target in lock.LOCKS:
        command = [
            _tool("pip-audit"),
            "--disable-pip",
            "--require-hashes",
            "-r",
            str(target.path),
            "--format",
            "json",
            "--progress-spinner",
            "off",
            "--vulnerability-service",
            service,
            "--timeout",
            "20",
        ]
        command += ["--osv-url", osv_url] if osv_url else []
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        try:
            dependencies = json.loads(result.stdout)["dependencies"]
        except (ValueError, KeyError):
            print(
                f"{target.path.name}: INCOMPLETE: pip-audit failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-2000:]}"
            )
            incomplete = True
            continue
        skipped = [d for d in dependencies if "skip_reason" in d]
        found = [(d["name"], d["version"], v) for d in dependencies for v in d.get("vulns", [])]
        for name, version, vuln in found:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release yet"
            print(f"{target.path.name}: {name}=={version}: {vuln['id']} (fixed in: {fixes})")
        if skipped:
            print(
                f"{target.path.name}: INCOMPLETE: the vulnerability service '{service}' could not answer for "
                f"{len(skipped)} of {len(dependencies)} packages (e.g. {skipped[0]['skip_reason']}). "
                "Run `make audit` where https://pypi.org/pypi/<name>/<version>/json answers, or "
                "`make audit AUDIT_SERVICE=osv` where https://api.osv.dev answers."
            )
            incomplete = True
        checked = len(dependencies) - len(skipped)
        total = len(dependencies)
        print(f"{target.path.name}: {checked} of {total} packages checked, {len(found)} known vulnerabilities")
        vulnerable = vulnerable or bool(found)
    return EXIT_VULNERABLE if vulnerable else EXIT_INCOMPLETE if incomplete else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["sbom"]:
        return sbom(Path(argv[1]) if len(argv) > 1 else lock.ROOT / "build" / "sbom")
    if argv[:1] == ["audit"]:
        return audit(os.environ.get("AUDIT_SERVICE", "pypi"), os.environ.get("AUDIT_OSV_URL") or None)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
