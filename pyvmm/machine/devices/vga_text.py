"""The VGA text screen: 80 x 25 cells of (character, attribute) at 0xB8000, and the CRT
controller's index/data ports (0x3D4/0x3D5) with the cursor position registers 0x0E/0x0F.

The cells are ordinary guest RAM (a guest writes them like any memory); this model reads
them back to show the screen (`pyvmm run --screen`) and keeps the CRTC registers."""
BUFFER = 0xB8000
COLUMNS, ROWS = 80, 25

# code page 437's printable characters as Unicode, for showing the screen on a terminal
CP437_HIGH = ("ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧"
              "╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0")


class VGAText:
    name = "vga-crtc"
    io_size = 1

    def __init__(self, read_memory):
        self.read_memory = read_memory          # callable(address, size) -> bytes
        self.index = 0
        self.registers = bytearray(0x20)

    def io_read(self, port, size):
        if port == 0x3D4:
            return self.index
        if port == 0x3D5:
            return self.registers[self.index & 0x1F]
        return 0xFF

    def io_write(self, port, size, value):
        if port == 0x3D4:
            self.index = value & 0x1F
        elif port == 0x3D5:
            self.registers[self.index & 0x1F] = value & 0xFF

    @property
    def cursor(self):
        position = (self.registers[0x0E] << 8) | self.registers[0x0F]
        return divmod(position, COLUMNS)                # (row, column)

    def text(self):
        """The screen as 25 lines of text (trailing blanks removed)."""
        cells = self.read_memory(BUFFER, COLUMNS * ROWS * 2)
        lines = []
        for row in range(ROWS):
            chars = []
            for col in range(COLUMNS):
                c = cells[2 * (row * COLUMNS + col)]
                chars.append(" " if c in (0, 32) else chr(c) if 32 < c < 127 else
                             CP437_HIGH[c - 128] if c >= 128 else ".")
            lines.append("".join(chars).rstrip())
        return "\n".join(lines)
