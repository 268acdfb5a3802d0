from mptcpkit.launch import main

main()
