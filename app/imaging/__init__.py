"""Images in and out: decoding and encoding (`codecs`), turning pictures into model input (`model_input`)
and framing hand-drawn digits the way MNIST frames its digits (`mnist_frame`)."""
