from mmdata.cli import main

main()
