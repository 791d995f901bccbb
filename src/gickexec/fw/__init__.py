"""UEFI firmware tables and the Linux memreserve chain in memory."""
