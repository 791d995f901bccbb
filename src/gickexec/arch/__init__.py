"""Pure register, command and table layouts: encoders and decoders, no state."""
