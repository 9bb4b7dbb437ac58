"""Home Assistant backup archives: write, read, check, extract."""
