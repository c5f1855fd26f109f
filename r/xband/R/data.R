# What xband_explain() takes as `data` (a path, GeoTIFF files, an R array, terra rasters) ->
# the --data / --labels words, the class names in model order and the band names.

# A list: args (--data, maybe --labels, --data-layout), classes, bands (NULL: xband's default).
data_args <- function(data, labels, classes, bands, work) {
  if (is.character(data) && length(data) == 1 && !is_image_file(data)) {
    return(path_data_args(data, labels, classes, bands))
  }
  if (is.character(data)) return(file_list_args(data, labels, classes, bands, work))
  if (inherits(data, "SpatRaster")) {
    stop("xband_explain: `data` is one SpatRaster, which xband would take as one image. Give a ",
         "list of SpatRasters, one per image (e.g. lapply(files, terra::rast)), with `labels`.",
         call. = FALSE)
  }
  if (is.list(data) && !is.data.frame(data) && length(data) &&
      all(vapply(data, inherits, logical(1), "SpatRaster"))) {
    images <- rasters_as_array(data)
    if (is.null(bands)) bands <- dimnames(images)[[4]]
    return(array_args(images, labels, classes, bands, work))
  }
  if (is.array(data) && length(dim(data)) == 4) {
    if (is.null(bands)) bands <- dimnames(data)[[4]]
    return(array_args(data, labels, classes, bands, work))
  }
  stop("xband_explain: `data` must be the path of a folder of class folders of GeoTIFFs (or a ",
       ".csv, .h5, .npz or .npy file), a character vector of GeoTIFF files with `labels`, an ",
       "array (images, height, width, bands), or a list of terra SpatRasters (one per image); ",
       "got ", paste(class(data), collapse = "/"),
       if (is.array(data)) paste0(" with ", length(dim(data)), " dimensions"), ".", call. = FALSE)
}

is_image_file <- function(path) grepl("\\.(tif|tiff|jp2)$", path, ignore.case = TRUE)

path_data_args <- function(path, labels, classes, bands) {
  if (!file.exists(path)) {
    stop(sprintf("xband_explain: `data` is '%s', which does not exist (working directory: %s).",
                 path, getwd()), call. = FALSE)
  }
  words <- c("--data", path.expand(path))
  if (!is.null(labels)) {
    if (!is.character(labels) || length(labels) != 1 || !file.exists(labels)) {
      stop("xband_explain: with `data` a path, `labels` must be the path of a labels file ",
           "(.npy, or text with one label a line) for .npy or .h5 images; class folders and ",
           "CSV files hold their labels.", call. = FALSE)
    }
    words <- c(words, "--labels", path.expand(labels))
  }
  list(args = words, classes = class_names(classes), bands = bands)
}

# GeoTIFF files and their labels -> a CSV of (path, label) rows that xband reads.
file_list_args <- function(files, labels, classes, bands, work) {
  missing <- files[!file.exists(files)]
  if (length(missing)) {
    stop(sprintf("xband_explain: %d of the %d files in `data` do not exist, e.g. '%s'.",
                 length(missing), length(files), missing[1]), call. = FALSE)
  }
  coded <- label_codes(labels, classes, length(files), required = TRUE)
  table <- data.frame(path = normalizePath(files), label = coded$classes[coded$codes + 1])
  csv <- file.path(work, "images.csv")
  utils::write.csv(table, csv, row.names = FALSE, fileEncoding = "UTF-8")
  list(args = c("--data", csv), classes = coded$classes, bands = bands)
}

array_args <- function(images, labels, classes, bands, work) {
  if (!is.numeric(images) && !is.logical(images)) {
    stop("xband_explain: the image array must be numeric (it is ", typeof(images), ").",
         call. = FALSE)
  }
  n <- dim(images)[1]
  words <- c("--data", write_npy(images, file.path(work, "images.npy")),
             "--data-layout", "channels_last")
  coded <- label_codes(labels, classes, n, required = FALSE)
  if (!is.null(coded$codes)) {
    words <- c(words, "--labels",
               write_npy(coded$codes, file.path(work, "labels.npy"), type = "int64"))
  }
  list(args = words, classes = coded$classes, bands = bands)
}

# Labels as class numbers (0-based, the model's output order) and the class names in that order.
label_codes <- function(labels, classes, n, required) {
  classes <- class_names(classes)
  if (is.null(labels)) {
    if (required) {
      stop("xband_explain: GeoTIFF files in `data` need `labels` (a factor, one per file).",
           call. = FALSE)
    }
    return(list(codes = NULL, classes = classes))
  }
  if (length(labels) != n) {
    stop(sprintf("xband_explain: `labels` has %d values for %d images.", length(labels), n),
         call. = FALSE)
  }
  if (is.factor(labels)) {
    if (is.null(classes)) classes <- levels(labels)
    labels <- as.character(labels)
  } else if (!is.character(labels)) {
    stop("xband_explain: `labels` must be a factor whose levels are the classes in the model's ",
         "output order (or class names with `classes`), not ", class(labels)[1], ". For class ",
         "numbers 0, 1, ... use factor(y, levels = 0:3, labels = c(\"Water\", ...)).",
         call. = FALSE)
  } else if (is.null(classes)) {
    stop("xband_explain: `labels` are class names: give `classes`, the names in the model's ",
         "output order (or `labels` as a factor with its levels in that order).", call. = FALSE)
  }
  if (anyNA(labels)) {
    stop(sprintf("xband_explain: `labels` is missing (NA) for image %d.", which(is.na(labels))[1]),
         call. = FALSE)
  }
  unknown <- setdiff(unique(labels), classes)
  if (length(unknown)) {
    stop(sprintf("xband_explain: `labels` holds %s, which `classes` (%s) does not name.",
                 toString(dQuote(unknown, FALSE)), toString(dQuote(classes, FALSE))),
         call. = FALSE)
  }
  list(codes = match(labels, classes) - 1L, classes = classes)
}

class_names <- function(classes) {
  if (is.null(classes)) return(NULL)
  if (is.factor(classes)) classes <- levels(classes)
  if (!is.character(classes) || anyNA(classes) || anyDuplicated(classes)) {
    stop("xband_explain: `classes` must be distinct class names (a character vector, or a ",
         "factor whose levels are used) in the model's output order.", call. = FALSE)
  }
  classes
}

# A list of SpatRasters (one image each: rows, columns, one layer per band) as an array
# (images, height, width, bands); the band names are the layer names when all rasters share them.
rasters_as_array <- function(rasters) {
  if (!requireNamespace("terra", quietly = TRUE)) {
    stop("xband_explain: reading SpatRasters needs the terra package: install.packages(\"terra\").",
         call. = FALSE)
  }
  shape <- function(r) c(terra::nrow(r), terra::ncol(r), terra::nlyr(r))
  first <- shape(rasters[[1]])
  for (i in seq_along(rasters)) {
    if (!identical(shape(rasters[[i]]), first)) {
      stop(sprintf(paste0("xband_explain: the SpatRasters in `data` must all have the same ",
                          "rows, columns and layers: image 1 is %s, image %d is %s."),
                   paste(first, collapse = " x "), i, paste(shape(rasters[[i]]), collapse = " x ")),
           call. = FALSE)
    }
  }
  images <- array(NA_real_, c(length(rasters), first))
  for (i in seq_along(rasters)) images[i, , , ] <- terra::as.array(rasters[[i]])
  layer_names <- lapply(rasters, names)
  if (all(vapply(layer_names, identical, logical(1), layer_names[[1]]))) {
    dimnames(images) <- list(NULL, NULL, NULL, layer_names[[1]])
  }
  images
}
