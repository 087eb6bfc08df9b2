from bench import ping, restart, supervise, system

for module in (ping, system, supervise, restart):
    module.main()
