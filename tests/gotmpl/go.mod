module forgeloop/gotmpl

go 1.19
