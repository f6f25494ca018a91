module example.com/acme/trader

go 1.26
