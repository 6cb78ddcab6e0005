from onnxkd.cli import main

main()
