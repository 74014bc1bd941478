"""The `order-pipeline.dev/v1alpha1` API: spec models mirroring the CRD schema."""

from order_operator.v1alpha1.spec import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ApiSpec,
    AwsSpec,
    DevelopmentSpec,
    OrderPipelineSpec,
    ProcessorScaling,
    ProcessorSpec,
    QueueSpec,
)

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ApiSpec",
    "AwsSpec",
    "DevelopmentSpec",
    "OrderPipelineSpec",
    "ProcessorScaling",
    "ProcessorSpec",
    "QueueSpec",
]
