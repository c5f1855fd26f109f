# NumPy .npy files written from R, in R's own column-major order (fortran_order: True), so
# that NumPy sees the same shape and the same values at the same indices: nothing transposed.

write_npy <- function(x, path, type = c("float32", "int64")) {
  type <- match.arg(type)
  shape <- dim(x)
  if (is.null(shape)) shape <- length(x)
  shape_text <- if (length(shape) == 1) sprintf("(%d,)", shape) else
    sprintf("(%s)", paste(shape, collapse = ", "))
  descr <- if (type == "float32") "<f4" else "<i8"
  header <- sprintf("{'descr': '%s', 'fortran_order': True, 'shape': %s, }", descr, shape_text)
  pad <- (64 - (10 + nchar(header) + 1) %% 64) %% 64  # the header block ends on 64 bytes
  header <- paste0(header, strrep(" ", pad), "\n")
  con <- file(path, "wb")
  on.exit(close(con))
  writeBin(as.raw(c(0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00)), con)  # \x93NUMPY v1.0
  writeBin(as.integer(nchar(header)), con, size = 2, endian = "little")
  writeChar(header, con, eos = NULL)
  if (type == "float32") {
    writeBin(as.numeric(x), con, size = 4, endian = "little")
  } else {  # int64 as two little-endian 32-bit words (R has no 64-bit integers)
    values <- as.integer(x)
    words <- rbind(values, ifelse(values < 0L, -1L, 0L))
    writeBin(as.vector(words), con, size = 4, endian = "little")
  }
  invisible(path)
}
