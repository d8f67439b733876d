"""Getting models in and out: μP-folded Llama export, GGUF for llama.cpp, import of MiniCPM/Xmodel-2 and Llama."""
