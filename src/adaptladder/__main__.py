from adaptladder.cli import main

main()
