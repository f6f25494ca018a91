module example.com/acme/exchange

go 1.26
