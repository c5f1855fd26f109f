# Planted images, drawn as tests/planted.py draws them (the recipe fixtures/planted.keras was
# trained on): 6 bands of noise, 12 x 12 pixels; class c carries a blob in band PLANTED[c]
# (the last class none), every image a blob in one distractor band.
PLANTED_BANDS <- c("coastal", "blue", "green", "red", "nir", "swir")
PLANTED_CLASSES <- c("Open water", "Crop land", "Forest", "Bare soil")  # model order, unsorted
PLANTED <- c("Open water" = "coastal", "Crop land" = "green", "Forest" = "nir")

planted_images <- function(n_per_class = 20, seed = 1) {
  set.seed(seed)
  size <- 12
  classes <- rep(seq_along(PLANTED_CLASSES), each = n_per_class)
  x <- array(stats::rnorm(length(classes) * size * size * 6, sd = 0.3),
             c(length(classes), size, size, 6),
             dimnames = list(NULL, NULL, NULL, PLANTED_BANDS))
  grid <- expand.grid(i = seq_len(size) - 1, j = seq_len(size) - 1)
  blob <- function() {
    centre <- stats::runif(2, 3, size - 3)
    matrix(exp(-((grid$i - centre[1])^2 + (grid$j - centre[2])^2) / 6), size, size)
  }
  for (n in seq_along(classes)) {
    if (classes[n] <= 3) x[n, , , classes[n] * 2 - 1] <- x[n, , , classes[n] * 2 - 1] + 2 * blob()
    distractor <- sample(c(2, 4, 6), 1)
    x[n, , , distractor] <- x[n, , , distractor] + 2 * blob()
  }
  list(x = x, y = factor(PLANTED_CLASSES[classes], levels = PLANTED_CLASSES))
}

# One GeoTIFF per image, as terra writes them (LZW), in one folder per class.
write_class_folders <- function(x, y, root) {
  for (n in seq_len(dim(x)[1])) {
    folder <- file.path(root, as.character(y[n]))
    dir.create(folder, recursive = TRUE, showWarnings = FALSE)
    raster <- terra::rast(x[n, , , ])
    names(raster) <- dimnames(x)[[4]]
    terra::writeRaster(raster, file.path(folder, sprintf("patch %03d.tif", n)))
  }
  invisible(root)
}

planted_model <- function() test_path("fixtures", "planted.keras")
