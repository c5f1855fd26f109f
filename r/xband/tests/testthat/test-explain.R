# xband_explain() running xband: terra rasters with factor labels (class names with spaces,
# in the model's order), settings as R values, progress passed to the console, xband's errors
# as R errors. (GeoTIFF files with labels go through a CSV: test-data.R checks it; the class
# folder route runs in test-readme.R.)

planted_rasters <- function(d) {
  lapply(seq_len(dim(d$x)[1]), function(n) {
    raster <- terra::rast(d$x[n, , , ])
    names(raster) <- PLANTED_BANDS
    raster
  })
}

test_that("a list of SpatRasters with factor labels, settings as R values, progress shown", {
  skip_if_not_installed("terra")
  withr::local_options(xband.path = test_xband())
  d <- planted_images(20, seed = 2)
  out <- file.path(withr::local_tempdir(), "report from rasters")
  shown <- character()
  res <- withCallingHandlers(
    xband_explain(planted_model(), planted_rasters(d), labels = d$y,
                  methods = c("saliency", "feature_ablation"), out = out, seed = 3,
                  max_per_class = 15, all_images = TRUE, baseline = "mean", untuned = TRUE,
                  examples_per_class = 1, batch_size = 32, figures = FALSE),
    message = function(m) {
      shown <<- c(shown, conditionMessage(m))
      invokeRestart("muffleMessage")
    }
  )
  shown <- paste(shown, collapse = "")
  expect_match(shown, "estimated time")  # the cost estimate, printed before the run
  expect_match(shown, "img/s")  # the progress bar
  expect_equal(res$out, normalizePath(out))
  expect_equal(res$classes, PLANTED_CLASSES)
  expect_equal(res$bands, PLANTED_BANDS)
  expect_equal(top_band_of_planted(res, "feature_ablation"), PLANTED)
  expect_equal(res$accuracy$n_images, c(15L, 15L, 15L, 15L, 60L))
  settings <- res$summary_json$settings
  expect_equal(res$summary_json$seed, 3)
  expect_equal(settings$max_per_class, 15)
  expect_true(settings$all_images)
  expect_equal(settings$baseline, "mean")
  expect_false(settings$tuned)
  expect_equal(settings$examples_per_class, 1)
  expect_false(dir.exists(file.path(out, "figures")) &&
                 length(list.files(file.path(out, "figures"))) > 0)
})

test_that("xband's error comes back as an R error with its message", {
  withr::local_options(xband.path = test_xband())
  d <- planted_images(2)
  err <- expect_error(
    xband_explain(planted_model(), d$x, d$y, methods = "nonsense", quiet = TRUE),
    class = "xband_error"
  )
  expect_match(conditionMessage(err), "^xband: error: unknown method 'nonsense'")
  expect_equal(err$status, 2)
})
