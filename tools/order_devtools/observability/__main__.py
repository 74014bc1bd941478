from order_devtools.observability import generate

generate.main()
