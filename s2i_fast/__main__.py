from s2i_fast.cli import main

main()
