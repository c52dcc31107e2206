// Empty: the host emulation needs nothing from cuda_bf16.h.
