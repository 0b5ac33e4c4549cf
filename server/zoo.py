"""The architectures' older import name, kept so that configs written with it still load.

The architectures live in `augserve.kernels.zoo`. Model repositories and compressed models'
`spec.json` files name them as "augserve.server.zoo:resnet20" (the demo repository among
them), and this module resolves those names to the same classes and factories.
"""

from augserve.kernels.zoo import (
    BasicBlock,
    DigitsCNN,
    FacesCNN,
    ResNet,
    digits_cnn,
    faces_cnn,
    resnet18,
    resnet20,
)

__all__ = ["BasicBlock", "DigitsCNN", "FacesCNN", "ResNet", "digits_cnn", "faces_cnn",
           "resnet18", "resnet20"]
