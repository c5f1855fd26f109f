library(testthat)
library(xband)

test_check("xband")
