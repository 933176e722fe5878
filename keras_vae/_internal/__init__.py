"""Small helpers under everything else: argument checks, the quiet start of TensorFlow,
atomic writes, the run lock, old module names."""
