from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HorizontalFlip(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerticalFlip(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Rotate(_message.Message):
    __slots__ = ("degrees", "fill")
    DEGREES_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    degrees: _containers.RepeatedScalarFieldContainer[float]
    fill: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, degrees: _Optional[_Iterable[float]] = ..., fill: _Optional[_Iterable[float]] = ...) -> None: ...

class Scale(_message.Message):
    __slots__ = ("scale", "fill")
    SCALE_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    scale: _containers.RepeatedScalarFieldContainer[float]
    fill: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, scale: _Optional[_Iterable[float]] = ..., fill: _Optional[_Iterable[float]] = ...) -> None: ...

class Affine(_message.Message):
    __slots__ = ("translate", "shear", "shear_y", "fill")
    TRANSLATE_FIELD_NUMBER: _ClassVar[int]
    SHEAR_FIELD_NUMBER: _ClassVar[int]
    SHEAR_Y_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    translate: _containers.RepeatedScalarFieldContainer[float]
    shear: _containers.RepeatedScalarFieldContainer[float]
    shear_y: _containers.RepeatedScalarFieldContainer[float]
    fill: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, translate: _Optional[_Iterable[float]] = ..., shear: _Optional[_Iterable[float]] = ..., shear_y: _Optional[_Iterable[float]] = ..., fill: _Optional[_Iterable[float]] = ...) -> None: ...

class RandomCrop(_message.Message):
    __slots__ = ("size", "padding", "fill")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    padding: int
    fill: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, size: _Optional[_Iterable[int]] = ..., padding: _Optional[int] = ..., fill: _Optional[_Iterable[float]] = ...) -> None: ...

class RandomResizedCrop(_message.Message):
    __slots__ = ("size", "scale", "ratio")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    scale: _containers.RepeatedScalarFieldContainer[float]
    ratio: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, size: _Optional[_Iterable[int]] = ..., scale: _Optional[_Iterable[float]] = ..., ratio: _Optional[_Iterable[float]] = ...) -> None: ...

class Resize(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, size: _Optional[_Iterable[int]] = ...) -> None: ...

class CenterCrop(_message.Message):
    __slots__ = ("size", "fill")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    fill: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, size: _Optional[_Iterable[int]] = ..., fill: _Optional[_Iterable[float]] = ...) -> None: ...

class ColorJitter(_message.Message):
    __slots__ = ("brightness", "contrast", "saturation", "hue")
    BRIGHTNESS_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    SATURATION_FIELD_NUMBER: _ClassVar[int]
    HUE_FIELD_NUMBER: _ClassVar[int]
    brightness: float
    contrast: float
    saturation: float
    hue: float
    def __init__(self, brightness: _Optional[float] = ..., contrast: _Optional[float] = ..., saturation: _Optional[float] = ..., hue: _Optional[float] = ...) -> None: ...

class Grayscale(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GaussianBlur(_message.Message):
    __slots__ = ("kernel_size", "sigma")
    KERNEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    kernel_size: int
    sigma: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kernel_size: _Optional[int] = ..., sigma: _Optional[_Iterable[float]] = ...) -> None: ...

class RandomErasing(_message.Message):
    __slots__ = ("scale", "ratio", "value")
    SCALE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    scale: _containers.RepeatedScalarFieldContainer[float]
    ratio: _containers.RepeatedScalarFieldContainer[float]
    value: float
    def __init__(self, scale: _Optional[_Iterable[float]] = ..., ratio: _Optional[_Iterable[float]] = ..., value: _Optional[float] = ...) -> None: ...

class Normalize(_message.Message):
    __slots__ = ("mean", "std")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...

class NamedOp(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class OpSpec(_message.Message):
    __slots__ = ("p", "horizontal_flip", "vertical_flip", "rotate", "scale", "affine", "random_crop", "random_resized_crop", "resize", "center_crop", "color_jitter", "grayscale", "gaussian_blur", "random_erasing", "normalize", "named")
    P_FIELD_NUMBER: _ClassVar[int]
    HORIZONTAL_FLIP_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_FLIP_FIELD_NUMBER: _ClassVar[int]
    ROTATE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    AFFINE_FIELD_NUMBER: _ClassVar[int]
    RANDOM_CROP_FIELD_NUMBER: _ClassVar[int]
    RANDOM_RESIZED_CROP_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CENTER_CROP_FIELD_NUMBER: _ClassVar[int]
    COLOR_JITTER_FIELD_NUMBER: _ClassVar[int]
    GRAYSCALE_FIELD_NUMBER: _ClassVar[int]
    GAUSSIAN_BLUR_FIELD_NUMBER: _ClassVar[int]
    RANDOM_ERASING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    NAMED_FIELD_NUMBER: _ClassVar[int]
    p: float
    horizontal_flip: HorizontalFlip
    vertical_flip: VerticalFlip
    rotate: Rotate
    scale: Scale
    affine: Affine
    random_crop: RandomCrop
    random_resized_crop: RandomResizedCrop
    resize: Resize
    center_crop: CenterCrop
    color_jitter: ColorJitter
    grayscale: Grayscale
    gaussian_blur: GaussianBlur
    random_erasing: RandomErasing
    normalize: Normalize
    named: NamedOp
    def __init__(self, p: _Optional[float] = ..., horizontal_flip: _Optional[_Union[HorizontalFlip, _Mapping]] = ..., vertical_flip: _Optional[_Union[VerticalFlip, _Mapping]] = ..., rotate: _Optional[_Union[Rotate, _Mapping]] = ..., scale: _Optional[_Union[Scale, _Mapping]] = ..., affine: _Optional[_Union[Affine, _Mapping]] = ..., random_crop: _Optional[_Union[RandomCrop, _Mapping]] = ..., random_resized_crop: _Optional[_Union[RandomResizedCrop, _Mapping]] = ..., resize: _Optional[_Union[Resize, _Mapping]] = ..., center_crop: _Optional[_Union[CenterCrop, _Mapping]] = ..., color_jitter: _Optional[_Union[ColorJitter, _Mapping]] = ..., grayscale: _Optional[_Union[Grayscale, _Mapping]] = ..., gaussian_blur: _Optional[_Union[GaussianBlur, _Mapping]] = ..., random_erasing: _Optional[_Union[RandomErasing, _Mapping]] = ..., normalize: _Optional[_Union[Normalize, _Mapping]] = ..., named: _Optional[_Union[NamedOp, _Mapping]] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("ops", "dtype", "layout", "box_policy")
    OPS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    BOX_POLICY_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpSpec]
    dtype: str
    layout: str
    box_policy: str
    def __init__(self, ops: _Optional[_Iterable[_Union[OpSpec, _Mapping]]] = ..., dtype: _Optional[str] = ..., layout: _Optional[str] = ..., box_policy: _Optional[str] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data", "shape", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class OpParams(_message.Message):
    __slots__ = ("applied", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    values: _containers.ScalarMap[str, float]
    def __init__(self, applied: bool = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SampleParams(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpParams]
    def __init__(self, ops: _Optional[_Iterable[_Union[OpParams, _Mapping]]] = ...) -> None: ...

class Targets(_message.Message):
    __slots__ = ("boxes", "keypoints", "mask", "box_indices", "keypoints_visible")
    BOXES_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    BOX_INDICES_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_VISIBLE_FIELD_NUMBER: _ClassVar[int]
    boxes: _containers.RepeatedScalarFieldContainer[float]
    keypoints: _containers.RepeatedScalarFieldContainer[float]
    mask: Image
    box_indices: _containers.RepeatedScalarFieldContainer[int]
    keypoints_visible: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, boxes: _Optional[_Iterable[float]] = ..., keypoints: _Optional[_Iterable[float]] = ..., mask: _Optional[_Union[Image, _Mapping]] = ..., box_indices: _Optional[_Iterable[int]] = ..., keypoints_visible: _Optional[_Iterable[bool]] = ...) -> None: ...

class AugmentRequest(_message.Message):
    __slots__ = ("images", "pipeline", "pipeline_id", "seed", "epoch", "sample_indices", "return_params", "params", "targets")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDICES_FIELD_NUMBER: _ClassVar[int]
    RETURN_PARAMS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    pipeline: Pipeline
    pipeline_id: str
    seed: int
    epoch: int
    sample_indices: _containers.RepeatedScalarFieldContainer[int]
    return_params: bool
    params: _containers.RepeatedCompositeFieldContainer[SampleParams]
    targets: _containers.RepeatedCompositeFieldContainer[Targets]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., pipeline: _Optional[_Union[Pipeline, _Mapping]] = ..., pipeline_id: _Optional[str] = ..., seed: _Optional[int] = ..., epoch: _Optional[int] = ..., sample_indices: _Optional[_Iterable[int]] = ..., return_params: bool = ..., params: _Optional[_Iterable[_Union[SampleParams, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[Targets, _Mapping]]] = ...) -> None: ...

class AugmentResponse(_message.Message):
    __slots__ = ("images", "params", "targets")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    params: _containers.RepeatedCompositeFieldContainer[SampleParams]
    targets: _containers.RepeatedCompositeFieldContainer[Targets]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., params: _Optional[_Iterable[_Union[SampleParams, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[Targets, _Mapping]]] = ...) -> None: ...
