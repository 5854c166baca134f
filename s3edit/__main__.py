"""``python -m s3edit``: the CLI, as launchers that start a module want it
(``torchrun --nproc_per_node 4 -m s3edit edit clip.job --attr Eyeglasses``)."""

from s3edit.cli.app import main

if __name__ == "__main__":
    main()
