// Compiled only to produce the precompiled LibTorch headers that the torch-using libraries reuse
// (CMakeLists.txt, lp_torch_pch).
