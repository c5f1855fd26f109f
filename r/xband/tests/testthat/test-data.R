# Images and labels as xband reads them: .npy in R's order, labels in the model's class order.

test_that("labels are class numbers in the model's order, from factor levels or `classes`", {
  y <- factor(c("Crop land", "Open water", "Crop land"), levels = c("Open water", "Crop land"))
  expect_equal(xband:::label_codes(y, NULL, 3, FALSE),
               list(codes = c(1L, 0L, 1L), classes = c("Open water", "Crop land")))
  classes <- c("Forest", "Crop land", "Open water")
  expect_equal(xband:::label_codes(y, classes, 3, FALSE)$codes, c(1L, 2L, 1L))
  expect_equal(xband:::label_codes(as.character(y), classes, 3, FALSE)$codes, c(1L, 2L, 1L))
  expect_error(xband:::label_codes(as.character(y), NULL, 3, FALSE), "give `classes`")
  expect_error(xband:::label_codes(c(0, 1, 1), NULL, 3, FALSE), "must be a factor")
  expect_error(xband:::label_codes(y, NULL, 4, FALSE), "3 values for 4 images")
  expect_error(xband:::label_codes(factor(c("a", NA)), NULL, 2, FALSE), "NA\\) for image 2")
  expect_error(xband:::label_codes(y, "Forest", 3, FALSE), "which `classes`")
})

test_that("an array is written as a column-major float32 .npy, nothing transposed", {
  x <- array(seq_len(2 * 3 * 4 * 5) / 8, c(2, 3, 4, 5))
  path <- xband:::write_npy(x, tempfile(fileext = ".npy"))
  bytes <- readBin(path, "raw", file.size(path))
  header_length <- readBin(bytes[9:10], "integer", size = 2, endian = "little")
  header <- rawToChar(bytes[11:(10 + header_length)])
  expect_equal((10 + header_length) %% 64, 0)
  expect_match(header, "'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4, 5)", fixed = TRUE)
  values <- readBin(bytes[-(1:(10 + header_length))], "numeric", length(x), size = 4,
                    endian = "little")
  expect_equal(values, as.vector(x))
  labels <- xband:::write_npy(c(2L, 0L), tempfile(fileext = ".npy"), type = "int64")
  expect_equal((file.size(labels) - 2 * 8) %% 64, 0)  # two int64 after a 64-byte header block
})

test_that("a list of SpatRasters becomes the array (images, height, width, bands)", {
  skip_if_not_installed("terra")
  d <- planted_images(2)
  rasters <- lapply(1:8, function(n) {
    r <- terra::rast(d$x[n, , , ])
    names(r) <- PLANTED_BANDS
    r
  })
  images <- xband:::rasters_as_array(rasters)
  expect_equal(images, d$x[1:8, , , ], ignore_attr = TRUE)
  expect_equal(dimnames(images)[[4]], PLANTED_BANDS)
  withr::local_options(xband.path = file.path(R.home("bin"), "R"))  # an executable, not run
  rasters[[3]] <- terra::rast(d$x[3, 1:6, , ])
  expect_error(xband:::rasters_as_array(rasters), "image 1 is 12 x 12 x 6, image 3 is 6 x 12 x 6")
  expect_error(xband_explain(test_path("fixtures", "planted.keras"), rasters[[1]]),
               "Give a list of SpatRasters")
})

test_that("GeoTIFF files with labels are listed in a CSV xband reads", {
  folder <- withr::local_tempdir()
  files <- file.path(folder, c("a 1.tif", "b.tif"))
  file.create(files)
  found <- xband:::file_list_args(files, factor(c("Crop land", "Open water")),
                                  c("Open water", "Crop land"), NULL, folder)
  expect_equal(found$classes, c("Open water", "Crop land"))
  rows <- utils::read.csv(found$args[2])
  expect_equal(rows$path, normalizePath(files))
  expect_equal(rows$label, c("Crop land", "Open water"))
})

test_that("missing inputs are errors naming the argument", {
  withr::local_options(xband.path = file.path(R.home("bin"), "R"))  # any executable
  expect_error(xband_explain("no-model.keras", "patches"), "`model` is 'no-model.keras'")
  model <- test_path("fixtures", "planted.keras")
  expect_error(xband_explain(model, "no such folder"), "`data` is 'no such folder'")
  expect_error(xband_explain(model, matrix(1, 2, 2)), "got matrix/array with 2 dimensions")
})
