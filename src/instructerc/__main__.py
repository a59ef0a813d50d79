from instructerc.cli.main import console

console()
