"""Training of the shipped models with TensorFlow/Keras (an optional dependency of fastmnist).

`models` holds one named builder and training recipe per model, `pipeline` the tf.data input pipeline,
`train` the training run, `device` the choice of CPU or GPU, `pca` the projection used by `pca_mlp_bn_elu`,
and `ideal_inputs` the per-class input visualisation the exporter stores.
"""

# The names, kept here without importing TensorFlow so the command line can list them quickly;
# `models.RECIPES` defines each (a test checks the two agree).
MODEL_NAMES = ("softmax", "mlp1024", "mlp300", "mlp_bn_elu", "pca_mlp_bn_elu", "cnn")
# Where `fastmnist train --device` may train; `device.select_device` applies the choice.
DEVICES = ("auto", "cpu", "gpu")
