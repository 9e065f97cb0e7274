"""Python packages the engine needs inside Slicer, installed on first use with the user's consent.

torch comes from the PyTorch extension (PyTorchUtils picks the CUDA build that matches the
driver); nibabel, tqdm, Pillow and psutil (Stop kills the training's whole process tree with it)
through pip. Never called at import time, so loading the
module never installs anything. `confirm(message) -> bool` is supplied by the caller (the widget
passes `slicer.util.confirmOkCancelDisplay`), which keeps this file free of GUI code.
"""
from __future__ import annotations

import importlib.util

from .i18n import tr as _

PIP_PACKAGES = {"nibabel": "nibabel>=5.0", "tqdm": "tqdm>=4.60", "PIL": "pillow>=9.0", "psutil": "psutil>=5"}
TORCH_REQUIREMENT = ">=2.1"


class DependencyError(RuntimeError):
    pass


def missing_pip_packages() -> list[str]:
    return [req for module, req in PIP_PACKAGES.items() if importlib.util.find_spec(module) is None]


def missing_engine_modules() -> list[str]:
    """What ensure_dependencies would install that is missing: torch, nibabel, then the other pip
    packages (tqdm, Pillow, psutil), by import name (the self-tests skip in testing mode if any)."""
    wanted = ["torch", "nibabel"] + [m for m in PIP_PACKAGES if m != "nibabel"]
    return [m for m in wanted if importlib.util.find_spec(m) is None]


def skip_test_without_engine(test_case, testing: bool) -> None:
    """A module self-test in testing mode (ctest) installs nothing: a missing package (Slicer bundles
    none of torch, nibabel, tqdm, psutil) is a skip that says why, not a failure."""
    missing = missing_engine_modules()
    if missing and testing:
        test_case.skipTest(f"{', '.join(missing)} not installed; testing mode installs nothing "
                           "(install the PyTorch extension, and open the module once to install the others, "
                           "to run this test)")


def ensure_dependencies(confirm, testing: bool = False) -> None:
    """Make torch and the pip packages importable, asking before installing anything.
    Raises DependencyError with what the user has to do when that is not possible."""
    import slicer
    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ImportError:
            raise DependencyError(_("SMILE needs PyTorch: install the 'PyTorch' extension from the "
                                    "Extensions Manager, restart Slicer, and try again.")) from None
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if not logic.torchInstalled():
            if testing:
                raise DependencyError(_("torch is not installed (not installed automatically in testing mode)"))
            torch = logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                raise DependencyError(_("PyTorch was not installed; SMILE cannot run without it."))
    missing = missing_pip_packages()
    if missing:
        packages = ", ".join(missing)
        if testing:
            raise DependencyError(_("missing Python packages: {packages} (testing mode installs nothing)").format(
                packages=packages))
        if not confirm(_("SMILE needs these Python packages, which will be installed now:\n{packages}").format(
                packages="\n".join(missing))):
            raise DependencyError(_("SMILE cannot run without the Python packages {packages}, which were not "
                                    "installed: you declined. Press Apply again to install them.").format(
                                        packages=packages))
        slicer.util.pip_install(missing)
