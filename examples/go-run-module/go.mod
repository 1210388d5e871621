module example.com/gorunmodule

go 1.19
