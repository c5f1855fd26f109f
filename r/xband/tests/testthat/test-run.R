# xband's failure as an R error: its own message first, the R argument names for its flags.

test_that("the error is xband's message, with the R names of the flags it mentions", {
  stderr <- paste0("1 methods:  50%|#####   | 4/8\r",
                   "xband: error: accuracy 0.40 with the classes as given; 1.00 with --classes ",
                   "'Water,Crop'. Give --classes, or pass --accept-low-accuracy to go on.\n",
                   "usage: [--trust-graph]\n")
  err <- xband:::xband_error(2L, stderr, c("explain"))
  expect_s3_class(err, "xband_error")
  lines <- strsplit(conditionMessage(err), "\n")[[1]]
  expect_match(lines[1], "^xband: error: accuracy 0.40")
  expect_equal(lines[3], paste0("(in R, xband's --classes, --accept-low-accuracy is ",
                                "xband_explain()'s classes, accept_low_accuracy)"))
  expect_equal(err$status, 2L)
})

test_that("without an error line, the last lines xband printed are the message", {
  err <- xband:::xband_error(1L, "Traceback (most recent call last):\n  boom\nValueError: x\n",
                             character())
  expect_equal(conditionMessage(err), "Traceback (most recent call last):\n  boom\nValueError: x")
})
