from mptcpkit.cli import main

main()
