"""Pure torch modules of the SadTalker networks (no file I/O)."""
