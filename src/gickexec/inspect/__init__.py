"""Reading real guest memory images: ELF cores and raw dumps."""
