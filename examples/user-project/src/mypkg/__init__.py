"""mypkg: a user's own segmentation package (segcheck's example of a project that depends on it)."""
