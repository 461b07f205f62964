from pyoci import launcher

launcher.launched = True   # the command's own process: pyoci.linux.sealed may re-execute it

from pyoci.cli import main  # noqa: E402

raise SystemExit(main())
