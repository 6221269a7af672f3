"""`python -m newsletter` runs the same command as the `newsletter` script."""

from newsletter.cli import main

main()
