from aclbuild.cli import main

main()
