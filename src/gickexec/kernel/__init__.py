"""Linux behaviour per kernel profile: memblock, EFI, the GICv3 ITS driver, kexec."""
