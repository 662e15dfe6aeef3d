# b3 layout: mobilenet_v3_large training step, batch 127 | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32
# Made by b3. Render with:  gnuplot layout.gp  (in this folder)
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 1100,650 font 'sans,10' noenhanced
} else {
  set terminal png size 1100,650 noenhanced
}
set output 'layout.png'
set title "b3 layout: mobilenet_v3_large training step, batch 127 | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32\nreal images/s, mean +- 1 sample std over 3 measurements of 5 steps; baseline nhwc, divisor 8, unpadded, aligned; 32x32 synthetic" noenhanced
set xlabel '' noenhanced
set ylabel 'real images/s' noenhanced
set grid
set yrange [0:*]
set key top right noenhanced
set style fill solid 0.6 border -1
set boxwidth 0.6
set xrange [-0.6:5.6]
set xtics rotate by -25 noenhanced
set bmargin 7
plot 'layout.dat' using 1:3:4:xticlabels(2) with boxerrorbars lc rgb '#4477aa' title 'real images/s (mean +- 1 std)'
