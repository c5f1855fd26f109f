# An xband report folder as an xband_result: typed data frames, classes in the model's order.

example <- function() xband_read(system.file("extdata", "example-report", package = "xband"))

test_that("the report's tables come back typed, classes in the model's order", {
  res <- example()
  expect_s3_class(res, "xband_result")
  expect_equal(res$classes, PLANTED_CLASSES)
  expect_equal(res$bands, PLANTED_BANDS)
  imp <- res$importance
  expect_true(all(vapply(imp[c("score", "share", "ci_low", "share_ci_high")], is.numeric, TRUE)))
  expect_type(imp$rank, "integer")
  expect_equal(levels(imp$class), c(PLANTED_CLASSES, "all images"))
  expect_equal(levels(imp$band), PLANTED_BANDS)
  expect_equal(as.character(res$top_bands$class), c(PLANTED_CLASSES, "all images"))
  expect_equal(levels(res$top_bands$class), c(PLANTED_CLASSES, "all images"))
  expect_equal(res$top_bands$feature_ablation[1:3], unname(PLANTED))
  expect_equal(as.character(res$verdict$class), PLANTED_CLASSES)
  expect_type(res$verdict$agreed, "logical")
  expect_equal(res$accuracy$n_images, c(20L, 20L, 20L, 20L, 80L))
  expect_type(res$accuracy$accuracy, "double")
  expect_true(res$fidelity$passed)
  expect_type(res$fidelity$max_abs_diff, "double")
  expect_equal(res$methods$method, c("saliency", "feature_ablation"))
  expect_type(res$consensus$mean_rank, "double")
  expect_identical(as.data.frame(res), res$importance)
})

test_that("print and summary show the verdict first", {
  res <- example()
  printed <- capture.output(print(res))
  expect_match(printed[1], "xband result: 80 images, 4 classes, 6 bands")
  expect_true(any(grepl("Open water: coastal first", printed, fixed = TRUE)))
  summarised <- capture.output(summary(res))
  expect_match(summarised[1], "^Verdict: Methods used, not checked")
  expect_true(any(grepl("Top bands per class", summarised)))
  expect_true(any(grepl("Conversion fidelity vs tensorflow: passed", summarised)))
})

test_that("plot draws a band x class heat map, with ggplot2 or base graphics", {
  res <- example()
  withr::local_pdf(NULL)
  shares <- plot(res, method = "feature_ablation", engine = "base")
  expect_equal(dim(shares), c(6L, 4L))
  expect_equal(dimnames(shares), list(band = PLANTED_BANDS, class = PLANTED_CLASSES))
  expect_equal(unname(apply(shares[, 1:3], 2, which.max)), match(PLANTED, PLANTED_BANDS))
  skip_if_not_installed("ggplot2")
  drawn <- plot(res)
  expect_s3_class(drawn, "ggplot")
  expect_match(drawn$labels$title, "^saliency: mean share per class")
  expect_error(plot(res, method = "lime"), "no method 'lime'")
})

test_that("the trust checks' tables are read when the run had evaluate = TRUE", {
  folder <- withr::local_tempdir()
  file.copy(list.files(system.file("extdata", "example-report", package = "xband"),
                       full.names = TRUE), folder)
  expect_length(xband_read(folder)$checks, 0)
  writeLines(c("method,class,stage,spearman,flagged", "saliency,Crop land,1,0.25,False",
               "saliency,all images,1,0.5,True"), file.path(folder, "randomisation.csv"))
  checks <- xband_read(folder)$checks
  expect_named(checks, "randomisation")
  expect_type(checks$randomisation$spearman, "double")
  expect_equal(checks$randomisation$flagged, c(FALSE, TRUE))
  expect_equal(levels(checks$randomisation$class), c(PLANTED_CLASSES, "all images"))
})

test_that("a folder without summary.json is an error saying so", {
  expect_error(xband_read(tempdir()), "holds no summary.json")
})
