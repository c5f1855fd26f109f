# R arguments -> xband's command-line options.

test_that("R values become xband's options", {
  words <- xband:::cli_options(list(
    methods = c("saliency", "feature_ablation"),
    classes = factor("Forest", levels = c("Open water", "Crop land", "Forest")),
    seed = 3, max_per_class = 20, max_images = NULL, all_images = TRUE, overwrite = FALSE,
    scale = 1e-4, clip = c(0, 1.5), baseline = "mean", budget = 90,
    band_groups = list(VIS = c("B02", "B03"), NIR = "B08"),
    regions = list(VIS = c(400, 700), NIR = c(750, 1300)),
    method_options = list(integrated_gradients = list(n_steps = 64), lime.n_samples = 32)
  ))
  expect_equal(words, c(
    "--band-groups", "VIS=B02,B03;NIR=B08", "--regions", "VIS=400-700;NIR=750-1300",
    "--classes", "Open water,Crop land,Forest", "--scale", "1e-04", "--clip", "0,1.5",
    "--methods", "saliency,feature_ablation", "--baseline", "mean", "--max-per-class", "20",
    "--all-images", "--budget", "90s", "--seed", "3",
    "--method-option", "integrated_gradients.n_steps=64", "--method-option", "lime.n_samples=32"
  ))
  expect_equal(xband:::cli_options(list(regions = "50nm", budget = "5m", seed = 1e6)),
               c("--regions", "50nm", "--budget", "5m", "--seed", "1000000"))
  expect_equal(xband:::cli_options(list(figures = FALSE, verbose = TRUE)),
               c("--no-figures", "--verbose"))
  expect_equal(xband:::cli_options(list(figures = TRUE, verbose = FALSE)), character())
})

test_that("a wrong value is an error naming the argument", {
  expect_error(xband:::cli_options(list(seed = 2.5)), "`seed` must be one whole number")
  expect_error(xband:::cli_options(list(all_images = "yes")), "`all_images` must be TRUE or FALSE")
  expect_error(xband:::cli_options(list(baseline = "median")),
               "`baseline` must be one of \"data\", \"mean\", \"zero\"")
  expect_error(xband:::cli_options(list(classes = c("Water", "Crop, irrigated"))),
               "`classes` holds a comma")
  expect_error(xband:::cli_options(list(clip = 1)), "`clip` must be two finite numbers")
  expect_error(xband:::cli_options(list(method_options = list(64))),
               "`method_options` must be a named list")
})
