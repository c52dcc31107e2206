// Empty: the host emulation's cuda_runtime.h defines the half types.
