"""`python -m gradfuse` is the `gradfuse` command."""

from gradfuse._cli import main

raise SystemExit(main())
