from kai_flows.cli import main

main()
