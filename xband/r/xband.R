# xband from R: which input bands does a classifier rely on, per class?
#
# Runs the `xband` command line (installed with pip) on an R array or a folder of GeoTIFFs and
# returns the per-band, per-class importance table as a data.frame. Base R only.
#
#   source(system("xband r-path", intern = TRUE))
#   imp <- xband_explain("model.keras", x, y, bands = c("B02", "B03", "B04", "B08"),
#                        methods = c("integrated_gradients", "feature_ablation"),
#                        out = "xband-report")
#   xband_heatmap(imp, "feature_ablation")
#
# x: an array of images (images, height, width, bands), as R's keras takes them, or the path
#    of a folder with one sub-folder of GeoTIFF patches per class (or any --data xband reads).
# y: a factor of class labels, its levels in the model's output order (passed as --classes);
#    NULL for a folder, whose class folders name the classes.
# The arrays are written as .npy files in R's own column-major order (fortran_order), so
# nothing is transposed. Set the XBAND environment variable to the xband executable when it
# is not on the PATH.

xband_write_npy <- function(x, path) {
  # x as a float32 .npy file, column-major (fortran_order: True), readable by NumPy.
  d <- dim(x)
  if (is.null(d)) d <- length(x)
  shape <- if (length(d) == 1) sprintf("(%d,)", d) else
    sprintf("(%s)", paste(d, collapse = ", "))
  header <- sprintf("{'descr': '<f4', 'fortran_order': True, 'shape': %s, }", shape)
  pad <- (64 - (10 + nchar(header) + 1) %% 64) %% 64  # header block ends on 64 bytes
  header <- paste0(header, strrep(" ", pad), "\n")
  con <- file(path, "wb")
  on.exit(close(con))
  writeBin(as.raw(c(0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00)), con)  # \x93NUMPY v1.0
  writeBin(as.integer(nchar(header)), con, size = 2, endian = "little")
  writeChar(header, con, eos = NULL)
  writeBin(as.numeric(x), con, size = 4, endian = "little")
  invisible(path)
}

xband_explain <- function(model, x, y = NULL, bands = NULL, sensor = NULL,
                          methods = "all", out = "xband-report", args = character(),
                          xband = Sys.getenv("XBAND", "xband"), quiet = TRUE) {
  # Explain `model` on images `x` with labels `y`; returns importance.csv as a data.frame.
  # args: more xband options, e.g. c("--scale", "0.0001", "--max-per-class", "50").
  work <- tempfile("xband-r-")
  dir.create(work)
  on.exit(unlink(work, recursive = TRUE))
  cli <- c("explain", "--model", model, "--out", out)
  if (is.character(x) && length(x) == 1) {
    cli <- c(cli, "--data", x)
  } else {
    if (length(dim(x)) != 4) stop("xband_explain: x must be an array (images, height, width, ",
                                  "bands) or the path of a data folder or file")
    cli <- c(cli, "--data", xband_write_npy(x, file.path(work, "images.npy")))
  }
  if (!is.null(y)) {
    y <- as.factor(y)
    if (any(is.na(y))) stop("xband_explain: y has missing labels (image ",
                            which(is.na(y))[1], ")")
    if (any(grepl(",", levels(y)))) stop("xband_explain: class names may not hold commas")
    labels <- xband_write_npy(as.integer(y) - 1, file.path(work, "labels.npy"))
    cli <- c(cli, "--labels", labels, "--classes", paste(levels(y), collapse = ","))
  }
  if (!is.null(bands)) cli <- c(cli, "--bands", paste(bands, collapse = ","))
  if (!is.null(sensor)) cli <- c(cli, "--sensor", sensor)
  cli <- c(cli, "--methods", paste(methods, collapse = ","), if (quiet) "--quiet", args)
  printed <- suppressWarnings(system2(xband, shQuote(cli), stdout = TRUE, stderr = TRUE))
  status <- attr(printed, "status")
  if (!is.null(status) && status != 0) {
    errors <- grep("^xband: ", printed, value = TRUE)
    stop(paste(c(sprintf("xband exited with status %d", status),
                 if (length(errors)) errors else tail(printed, 5)), collapse = "\n"),
         call. = FALSE)
  }
  if (!quiet) writeLines(printed)
  utils::read.csv(file.path(out, "importance.csv"), stringsAsFactors = FALSE)
}

xband_top_bands <- function(importance, method, grouping = "true_class") {
  # The top band of every class (not "all images") by mean share.
  rows <- importance[importance$method == method & importance$grouping == grouping &
                       importance$class != "all images", ]
  sapply(split(rows, rows$class), function(r) r$band[which.max(r$share)])
}

xband_heatmap <- function(importance, method, grouping = "true_class", file = NULL) {
  # Base-R band x class heat map of the mean share; to a PNG when `file` is given.
  rows <- importance[importance$method == method & importance$grouping == grouping &
                       importance$class != "all images", ]
  if (!nrow(rows)) stop("xband_heatmap: no rows for method '", method, "'")
  bands <- unique(rows$band[order(rows$band_index)])
  classes <- unique(rows$class)
  share <- matrix(NA_real_, length(bands), length(classes), dimnames = list(bands, classes))
  share[cbind(match(rows$band, bands), match(rows$class, classes))] <- rows$share
  if (!is.null(file)) {
    grDevices::png(file, width = 200 + 60 * length(bands), height = 150 + 45 * length(classes))
    on.exit(grDevices::dev.off())
  }
  limit <- max(abs(share), na.rm = TRUE)
  graphics::par(mar = c(6, 9, 3, 1))
  graphics::image(seq_along(bands), seq_along(classes), share, axes = FALSE, xlab = "",
                  ylab = "", zlim = c(-limit, limit),
                  col = grDevices::hcl.colors(51, "Blue-Red 3"),
                  main = sprintf("%s: mean share per class", method))
  graphics::axis(1, at = seq_along(bands), labels = bands, las = 2)
  graphics::axis(2, at = seq_along(classes), labels = classes, las = 1)
  graphics::text(rep(seq_along(bands), length(classes)),
                 rep(seq_along(classes), each = length(bands)), sprintf("%.2f", share), cex = 0.7,
                 col = ifelse(abs(share) > 0.6 * limit, "white", "black"))
  invisible(share)
}
