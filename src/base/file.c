/* Whole-file reads, atomic writes, read-only mappings and path helpers. */
#include "rlhi/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int rlhi_file_read(const char *path, char **data, size_t *len)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int result = 0;

    if (fd < 0)
        return rlhi_err_errno(RLHI_EIO, "cannot open '%s'", path);
    for (;;) {
        ssize_t n;

        if (rlhi_buf_grow(&b, 1 << 16)) {
            result = rlhi_err(RLHI_ENOMEM, "cannot read '%s': out of memory",
                              path);
            goto out;
        }
        n = read(fd, b.buf + b.len, b.cap - b.len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            result = rlhi_err_errno(RLHI_EIO, "cannot read '%s'", path);
            goto out;
        }
        if (n == 0)
            break;
        b.len += (size_t)n;
    }
    b.buf[b.len] = 0;
    *data = rlhi_buf_detach(&b, len);
out:
    close(fd);
    rlhi_buf_release(&b);
    return result;
}

int rlhi_file_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    const char *p = data;
    int fd;

    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return rlhi_err(RLHI_EINVAL, "path too long: '%s'", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return rlhi_err_errno(RLHI_EIO, "cannot create '%s'", tmp);
    while (len) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", tmp);

            close(fd);
            unlink(tmp);
            return r;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) || close(fd)) {
        int r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", tmp);

        unlink(tmp);
        return r;
    }
    if (rename(tmp, path)) {
        int r = rlhi_err_errno(RLHI_EIO, "cannot rename '%s' to '%s'", tmp,
                               path);

        unlink(tmp);
        return r;
    }
    return 0;
}

int rlhi_mmap_open(struct rlhi_mmap *m, const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    m->data = NULL;
    m->size = 0;
    if (fd < 0)
        return rlhi_err_errno(RLHI_EIO, "cannot open '%s'", path);
    if (fstat(fd, &st)) {
        int r = rlhi_err_errno(RLHI_EIO, "cannot stat '%s'", path);

        close(fd);
        return r;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return rlhi_err(RLHI_EIO, "cannot map '%s': is a directory", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);

        if (p == MAP_FAILED) {
            int r = rlhi_err_errno(RLHI_EIO, "cannot map '%s'", path);

            close(fd);
            return r;
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

void rlhi_mmap_close(struct rlhi_mmap *m)
{
    if (m->data)
        munmap(m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

bool rlhi_path_is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool rlhi_path_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

char *rlhi_path_join(const char *dir, const char *name)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    size_t n = strlen(dir);

    if (rlhi_buf_add(&b, dir, n) ||
        (n && dir[n - 1] != '/' && rlhi_buf_addc(&b, '/')) ||
        rlhi_buf_adds(&b, name)) {
        rlhi_buf_release(&b);
        return NULL;
    }
    return rlhi_buf_detach(&b, NULL);
}

int rlhi_mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    size_t i;

    if (n == 0 || n >= sizeof tmp)
        return rlhi_err(RLHI_EINVAL, "invalid directory path '%s'", path);
    memcpy(tmp, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != 0)
            continue;
        tmp[i] = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST)
            return rlhi_err_errno(RLHI_EIO, "cannot create directory '%s'",
                                  tmp);
        tmp[i] = path[i];
    }
    if (!rlhi_path_is_dir(path))
        return rlhi_err(RLHI_EIO, "cannot create directory '%s': "
                        "a file is in the way", path);
    return 0;
}
