# The README's R lines, as written, in a folder laid out as the README assumes (the xband
# repository root with its .venv; here a Keras model and GeoTIFF patches written by terra,
# class names and a folder name with spaces). tests/test_r.py checks that these lines are the
# README's, and runs its install line.

test_that("the README's R lines explain a Keras model on a terra GeoTIFF folder", {
  skip_if_not_installed("terra")
  xband <- test_xband()
  root <- file.path(withr::local_tempdir(), "my xband checkout")
  dir.create(root)
  file.symlink(dirname(dirname(xband)), file.path(root, ".venv"))
  file.copy(planted_model(), file.path(root, "model.keras"))
  d <- planted_images(20, seed = 1)
  write_class_folders(d$x, d$y, file.path(root, "patches"))
  withr::local_dir(root)
  withr::local_envvar(PATH = path_without_xband(), XBAND = NA)
  withr::local_options(xband.path = NULL)
  withr::local_pdf(NULL)
  expect_false(xband_available())

  # README lines, verbatim:
  Sys.setenv(PATH = paste(normalizePath(".venv/bin"), Sys.getenv("PATH"), sep = ":"))  # finds xband
  res <- xband::xband_explain("model.keras", "patches", methods = c("saliency", "feature_ablation"),
                              classes = c("Open water", "Crop land", "Forest", "Bare soil"))
  summary(res); plot(res)
  # end of the README lines

  expect_equal(xband_path(), file.path(normalizePath(".venv/bin"), "xband"))
  expect_s3_class(res, "xband_result")
  expect_equal(res$classes, PLANTED_CLASSES)
  expect_equal(top_band_of_planted(res, "feature_ablation"), PLANTED)
  expect_equal(res$accuracy$accuracy[res$accuracy$class == "all images"], 1)
  expect_equal(res$summary_json$model$format, "keras")
  expect_true(res$fidelity$passed)
  expect_true(file.exists(res$report))
  expect_output(print(summary(res)), "^Verdict: ")
})
