"""File I/O without policy: paths (local and fsspec), the atomic writer, the PNG codec, image
headers, and reading a mask file into an array."""
