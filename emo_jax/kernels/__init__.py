"""C++ kernels for XLA:CPU, built at first use (`build.load`): fused softmax attention (`cpu_attention`)."""
